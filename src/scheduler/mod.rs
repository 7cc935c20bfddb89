//! TODO(skeleton): owned by the scheduler work package.
