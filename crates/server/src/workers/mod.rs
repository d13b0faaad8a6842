//! Background work: deliveries of the durable job queue.

pub mod chat;
pub mod deadlines;
pub mod delivery;
