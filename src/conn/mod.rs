//! One connection's life: bytes in → codec → dispatch → batched writes.
//!
//! (being assembled)

pub mod outq;
