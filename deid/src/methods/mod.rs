//! The de-identification methods: each turns one node (or value) into its de-identified form.

pub mod scrub;
