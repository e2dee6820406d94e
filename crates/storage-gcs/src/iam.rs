//! IAM Credentials API client (being written).
