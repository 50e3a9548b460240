"""Seed mixing, so every (seed, epoch, rank, item) combination gets its own reproducible random stream."""


def mix_seed(*parts: int) -> int:
    """Combine integers (seed, epoch, rank, ...) into one 63-bit seed accepted by torch.Generator."""
    value = 0x5EED
    for part in parts:
        value = (value * 1_000_003 + int(part) + 1) % (2**63)
    return value
