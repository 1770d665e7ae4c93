//! Architecture support. Only x86_64 on KVM exists.

pub mod x86_64;
