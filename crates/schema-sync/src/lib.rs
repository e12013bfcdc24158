//! Declarative schema sync (work in progress).
