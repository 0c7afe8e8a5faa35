//! Test support for pttbridge integration tests.
