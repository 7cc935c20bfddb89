//! TODO(skeleton): owned by the config work package.
