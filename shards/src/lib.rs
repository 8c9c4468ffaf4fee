//! The thread-per-core runtime (being written).
