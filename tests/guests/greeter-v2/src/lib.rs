//! greeter-v1's source, built at version 2.0.0.
include!("../../greeter-v1/src/lib.rs");
