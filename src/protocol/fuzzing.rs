//! Fuzz bodies: ordinary library functions that feed arbitrary bytes to a decoder and
//! check its invariants. Proptest runs them on stable; `fuzz/` targets call them where
//! nightly is available.
