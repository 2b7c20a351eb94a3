//! Helpers shared by the integration tests; each test uses a part of them.
#![allow(dead_code)]

pub mod apiserver;
