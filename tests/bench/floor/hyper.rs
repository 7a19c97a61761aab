//! `floor-hyper`, the floor with hyper on both sides: pinproxy's engine without pinproxy (a benchmark reference; see engine.rs).

#[path = "engine.rs"]
mod engine;

fn main() {
    engine::main(engine::Hyper::Both);
}
