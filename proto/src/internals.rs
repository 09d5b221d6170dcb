//! Internal pieces that the fuzz bodies and the benchmarks drive directly,
//! re-exported for them the way quinn-proto's `fuzzing` module does: the
//! line reader, and the frame MAC keyed once per session as a connection
//! keys it. Behind the `testing` feature; not a stable API.

pub use crate::crypto::sign::{FrameMac, open_signed_with, sign_with};
pub use crate::line_reader::{Line, LineReader};
