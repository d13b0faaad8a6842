//! Background work: deliveries of the durable job queue.

pub mod deadlines;
pub mod delivery;
