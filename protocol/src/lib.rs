//! Host <-> agent protocol (placeholder, being written).
