//! `sqlx::migrate!` embeds the files of `migrations/` at compile time; on
//! stable Rust it cannot ask to be rebuilt when one is added, so this does.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
