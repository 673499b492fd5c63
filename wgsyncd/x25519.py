"""X25519 scalar multiplication (RFC 7748), only to derive a public key from a private one.

wgrest v2 and conf files give an interface's private key but not its public key;
deriving it here keeps the runtime free of a crypto dependency Debian 12 would
have to carry. Pure Python, used a handful of times per cycle.
"""

from __future__ import annotations

_P = 2**255 - 19
_A24 = 121665


def _clamp(scalar: bytes) -> int:
    """Clamp a 32-byte private key the way WireGuard and RFC 7748 do."""
    k = bytearray(scalar)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return int.from_bytes(k, "little")


def _ladder(k: int, u: int) -> int:
    """Montgomery ladder over curve25519, returns the u-coordinate of k*u."""
    x1, x2, z2, x3, z3 = u, 1, 0, u, 1
    swap = 0
    for t in reversed(range(255)):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % _P, (x2 - z2) % _P
        aa, bb = a * a % _P, b * b % _P
        e = (aa - bb) % _P
        c, d = (x3 + z3) % _P, (x3 - z3) % _P
        da, cb = d * a % _P, c * b % _P
        x3 = (da + cb) ** 2 % _P
        z3 = x1 * (da - cb) ** 2 % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return x2 * pow(z2, _P - 2, _P) % _P


def public_from_private(private: bytes) -> bytes:
    """The 32-byte public key for a 32-byte private key."""
    if len(private) != 32:
        raise ValueError("X25519 private key must be 32 bytes")
    return _ladder(_clamp(private), 9).to_bytes(32, "little")
