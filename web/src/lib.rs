//! The HTML face of the hub. It reads through a read-model trait that the hub implements; it never runs SQL.
