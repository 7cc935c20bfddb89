//! TODO(skeleton): owned by the cli work package.
