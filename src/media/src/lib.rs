//! pttbridge media engine.
