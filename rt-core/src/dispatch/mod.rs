//! Dispatch by `op`: the [`Handlers`] table, and how one link's messages
//! and requests reach a handler, the event stream or an answer of their
//! own ([`Dispatcher`]), bounded by the link's handler budget and ordered
//! lane; the [`Message`], [`Request`] and [`Responder`] values handlers and
//! the event stream get.

mod budget;
mod handlers;
mod lane;
mod message;
mod responder;
mod route;

pub(crate) use budget::{BudgetGuard, BudgetLimits, HandlerBudget};
pub use handlers::Handlers;
pub(crate) use handlers::{InlineFn, MessageFn, MessageRoute, RequestRoute};
pub(crate) use lane::{Lane, LaneCall};
pub use message::{Message, Request};
pub(crate) use responder::Answer;
pub use responder::Responder;
pub(crate) use route::Dispatcher;
