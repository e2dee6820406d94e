//! Placeholder: the STS AssumeRole credential provider is being written.

/// Configuration of an STS AssumeRole credential provider.
#[derive(Debug, Clone)]
pub struct AssumeRoleConfig;

/// An STS AssumeRole credential provider.
#[derive(Debug)]
pub struct AssumeRole;
