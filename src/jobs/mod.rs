//! TODO(skeleton): owned by the jobs work package.
