//! TODO(skeleton): owned by the http work package.
