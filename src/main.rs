//! The `shardcast` binary.
fn main() {
    eprintln!("shardcast: the server is not assembled yet");
    std::process::exit(1);
}
