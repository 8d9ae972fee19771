//! Free-text scrubbing. STUB — being written.
