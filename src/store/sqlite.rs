//! SQLite implementation of [`super::Store`]. TODO(skeleton): store work package.
