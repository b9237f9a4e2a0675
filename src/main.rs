fn main() {
    eprintln!("sipfork: not yet runnable");
    std::process::exit(2);
}
