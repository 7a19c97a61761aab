//! `floor-hyper-server`, the floor with hyper's HTTP/1.1 server towards the client (a benchmark reference; see engine.rs).

#[path = "engine.rs"]
mod engine;

fn main() {
    engine::main(engine::Hyper::Server);
}
