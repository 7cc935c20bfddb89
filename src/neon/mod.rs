//! TODO(skeleton): owned by the neon work package.
