//! `shardcast-loadgen` (being written).
fn main() {
    eprintln!("shardcast-loadgen: not assembled yet");
    std::process::exit(1);
}
