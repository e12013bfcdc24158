//! Change feeds (work in progress).
