//! k-anonymity risk report. STUB — being written.
