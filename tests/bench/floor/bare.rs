//! `floor`, the floor: a bare HTTP/1.1 forwarder, no HTTP library (a benchmark reference; see engine.rs).

#[path = "engine.rs"]
mod engine;

fn main() {
    engine::main(engine::Hyper::Neither);
}
