//! Generated Rust code for the cxloop contracts in `proto/`, compiled once for the whole
//! workspace. Nothing here is written by hand: change the `.proto` files instead.
//!
//! Services implement the `*_server` traits; tests, the `cxloop` binary and other services use
//! the `*_client` types. [`FILE_DESCRIPTOR_SET`] feeds gRPC reflection.

#![allow(missing_docs, clippy::all)]

/// Encoded `FileDescriptorSet` of every cxloop proto file (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cxloop_descriptor.bin"));

/// Shared value types (`cxloop.common.v1`).
pub mod common {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("cxloop.common.v1");
    }
}

/// The customer-feedback service (`cxloop.feedback.v1`).
pub mod feedback {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("cxloop.feedback.v1");
    }
}

/// The journey service (`cxloop.journeys.v1`).
pub mod journeys {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("cxloop.journeys.v1");
    }
}

/// The employee-experience service (`cxloop.employee.v1`).
pub mod employee {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("cxloop.employee.v1");
    }
}
