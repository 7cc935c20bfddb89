//! TODO(skeleton): owned by the daemon work package.
