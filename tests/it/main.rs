mod http;
mod store;
