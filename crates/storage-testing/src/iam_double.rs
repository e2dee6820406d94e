//! A local double of the IAM Credentials API (being written).
