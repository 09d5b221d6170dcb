//! The `framer` body: the line reader fed in chunks against a model.

use jsonlink_proto::ProtocolError;
use jsonlink_proto::internals::{Line, LineReader};
use jsonlink_proto::testing::chunks;

use crate::input::Input;

/// Feeds a [`LineReader`] the stream in data-derived chunks and checks it
/// against splitting the whole stream at once: the same lines, the same
/// error at the same place, and a buffer that never holds more than the
/// limit.
pub fn framer(data: &[u8]) {
    let mut input = Input::new(data);
    let limit = match input.u16() {
        u16::MAX => usize::MAX,
        n => usize::from(n),
    };
    let flags = input.byte();
    let sizes = input.split_sizes();
    let stream = input.rest();

    // The model: split everything at once; the first line longer than the
    // limit (the unterminated tail included) is an error.
    let mut parts: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    let mut want = Vec::new();
    let mut want_err = tail.len() > limit;
    for p in parts {
        if p.len() > limit {
            want_err = true;
            break;
        }
        want.push(p.to_vec());
    }
    let want_pending = if want_err { None } else { Some(tail.len()) };

    let whole = read_lines(&[stream], limit, flags);
    assert_eq!(
        whole,
        (want.clone(), want_err, want_pending),
        "one input, limit {limit}"
    );
    let split = read_lines(&chunks(stream, &sizes), limit, flags);
    assert_eq!(
        split,
        (want, want_err, want_pending),
        "chunks {sizes:?}, limit {limit}"
    );
}

/// Lines read, whether it failed, and the bytes left pending (if it did not).
type Lines = (Vec<Vec<u8>>, bool, Option<usize>);

fn read_lines(inputs: &[&[u8]], limit: usize, flags: u8) -> Lines {
    let mut r = LineReader::new();
    let mut lines = Vec::new();
    for (n, chunk) in inputs.iter().enumerate() {
        let mut chunk: &[u8] = chunk;
        loop {
            let res = r.next(&mut chunk, limit);
            assert!(
                r.pending() <= limit,
                "reader holds {} bytes, limit {limit}",
                r.pending()
            );
            match res {
                Err(e) => {
                    assert_eq!(e, ProtocolError::FrameTooLarge { limit });
                    return (lines, true, None);
                }
                Ok(None) => {
                    assert!(chunk.is_empty(), "None before the input was used up");
                    break;
                }
                Ok(Some(Line::Input(l))) => lines.push(l.to_vec()),
                // Both ways of taking a buffered line, as the flags say.
                Ok(Some(Line::Buffered)) if flags & (1 << (n % 8)) == 0 => {
                    lines.push(r.buffered().to_vec());
                    r.consume_buffered();
                }
                Ok(Some(Line::Buffered)) => {
                    let buf = r.take_buffered();
                    lines.push(buf.clone());
                    r.restore(buf);
                    r.shrink(usize::from(flags));
                }
            }
            assert!(r.pending() <= limit);
        }
    }
    let pending = r.pending();
    (lines, false, Some(pending))
}
