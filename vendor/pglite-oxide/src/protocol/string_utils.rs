pub fn byte_length_utf8(input: &str) -> usize {
    input.len()
}
