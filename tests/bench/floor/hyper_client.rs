//! `floor-hyper-client`, the floor with hyper's HTTP/1.1 client towards the upstream (a benchmark reference; see engine.rs).

#[path = "engine.rs"]
mod engine;

fn main() {
    engine::main(engine::Hyper::Client);
}
