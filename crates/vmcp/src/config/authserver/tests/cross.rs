//! Checks between the two files.
