//! A small per-worker memo of keyed hashes over text that repeats: `Reference.reference` values
//! (every resource of a patient points at the same Patient, Encounter and Practitioner) and the
//! patients whose date offsets the resources of a compartment share. A keyed BLAKE3 costs far more
//! than hashing the text once more to find it here and comparing it.
//!
//! Direct-mapped: each text has one slot, a newer text takes it over. Results depend on the key;
//! the owner keeps a memo for one key only (see `engine.rs`).

/// Slots of a memo (a power of two): ~70% hits on the Synthea exports, ~100 KB per worker.
const SLOTS: usize = 1024;

/// Recent results of a function of text, by text.
#[derive(Debug)]
pub struct Memo<V> {
    /// Empty until first used (a memo that is never used allocates nothing).
    slots: Vec<Option<(String, V)>>,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<V: Clone> Memo<V> {
    /// `f(text)`, from the memo when `text` is in its slot; else computed and kept there.
    pub fn get_or_insert_with(&mut self, text: &str, f: impl FnOnce(&str) -> V) -> V {
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, || None);
        }
        let slot = &mut self.slots[slot_of(text)];
        match slot {
            Some((key, value)) if key == text => value.clone(),
            Some((key, value)) => {
                // The slot's buffers are reused: no allocation for the key in the steady state.
                let new = f(text);
                key.clear();
                key.push_str(text);
                value.clone_from(&new);
                new
            }
            None => {
                let new = f(text);
                *slot = Some((text.to_string(), new.clone()));
                new
            }
        }
    }
}

/// The slot of a text: a multiplicative hash over 8-byte words (cheap for ids and references of
/// 40-80 bytes; the memo needs spread, not resistance to crafted input, which only costs hits).
fn slot_of(text: &str) -> usize {
    let mut h = text.len() as u64;
    for chunk in text.as_bytes().chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    (h >> (64 - SLOTS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_stays_right_when_texts_share_a_slot() {
        let mut memo = Memo::default();
        assert_eq!(memo.get_or_insert_with("Patient/1", str::len), 9);
        assert_eq!(memo.get_or_insert_with("Patient/1", |_| unreachable!()), 9);
        assert_eq!(memo.get_or_insert_with("", |_| 7), 7);
        assert_eq!(memo.get_or_insert_with("", |_| unreachable!()), 7);
        // More texts than slots: later ones take slots over, every answer is still right.
        for round in 0..2 {
            for i in 0..3 * SLOTS {
                let text = format!("Encounter/{i}");
                assert_eq!(
                    memo.get_or_insert_with(&text, str::len),
                    text.len(),
                    "{round}"
                );
            }
        }
    }
}
