"""Classic BPF for the packet probe: a tiny assembler and the one program the probe needs.

Why we assemble the program ourselves instead of letting scapy compile a pcap expression
(``scapy.arch.common.compile_filter``, which loads libpcap through ctypes):

* **dependency**: scapy's compiler needs ``libpcap.so`` (Debian ``libpcap0.8``) at run time; it
  is absent on a fresh Debian machine (it is absent on this one — ``compile_filter`` raises
  ``ImportError: libpcap is not available``). Forty lines of assembler are cheaper than a system
  package on every production host.
* **IPv6**: pcap's ``tcp[13]``-style header access works for IPv4 only ("upper-layer protocol
  types only apply to IPv4", pcap-filter(7); libpcap issue #600 is still open), so a pcap filter
  cannot pick SYN/FIN/RST or payload-carrying segments out of IPv6 traffic — the kernel would
  have to pass every IPv6 packet of the port.
* **what pcap cannot say at all**: the program drops the loopback device's *outgoing* copy of
  every packet in the kernel (``SKF_AD_IFINDEX`` / ``SKF_AD_PKTTYPE`` ancillary loads; on ``lo``
  every packet is seen twice), and returns a per-packet snap length of *headers + a few payload
  bytes* (a pcap program returns one constant), so the kernel copies ~60–330 bytes per packet,
  never a full segment.

The program runs on a ``SOCK_DGRAM`` packet socket, where offset 0 is the network header on
every link type (``packet_rcv`` pulls outgoing packets to the network header too), so one
program serves ``lo``, Ethernet, veth, tun and WireGuard devices alike. See
:func:`tcp_events_program` for what it passes. :func:`run` is a small interpreter of the same
instruction set, used by the tests to check the program's logic on synthetic packets.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

__all__ = [
    "MAX_FILTER_PORTS",
    "Insn",
    "Program",
    "attach",
    "drop_all_program",
    "run",
    "tcp_events_program",
]

# --- constants from linux/filter.h, linux/bpf_common.h, linux/if_packet.h -------------------------

BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0xA0
BPF_ADD, BPF_SUB, BPF_AND, BPF_LSH, BPF_RSH = 0x00, 0x10, 0x50, 0x60, 0x70
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_K, BPF_X = 0x00, 0x08
BPF_A = 0x10  # RET A
BPF_TAX, BPF_TXA = 0x00, 0x80

SKF_AD_OFF: Final = -0x1000
SKF_AD_PROTOCOL: Final = 0
SKF_AD_PKTTYPE: Final = 4
SKF_AD_IFINDEX: Final = 8

SO_ATTACH_FILTER: Final = 26
PACKET_OUTGOING: Final = 4
ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10

MAX_FILTER_PORTS: Final = 64
"""Ports matched one by one in the kernel. Conditional jumps reach at most 255 instructions, so
longer lists would need trampolines; beyond this the program matches the range min..max and the
probe drops the in-between ports in user space (a server with >64 listening ports is rare)."""

_INSN = struct.Struct("=HBBI")

# Scratch memory slots (M[0..15]) the program uses.
_M_IPHL, _M_TOTAL, _M_TOSRV, _M_HDRS, _M_PAYLOAD = range(5)


@dataclass(frozen=True, slots=True)
class Insn:
    """One ``struct sock_filter``; ``jt``/``jf`` are resolved relative jump offsets."""

    code: int
    jt: int
    jf: int
    k: int


@dataclass(frozen=True, slots=True)
class Program:
    """An assembled program and the facts it was built from (for the probe's sample and tests)."""

    insns: tuple[Insn, ...]
    ports: tuple[int, ...]
    exact_ports: bool
    """False when the ports were too many and the kernel matches their range instead."""

    def pack(self) -> bytes:
        return b"".join(_INSN.pack(i.code, i.jt, i.jf, i.k & 0xFFFFFFFF) for i in self.insns)


# --- assembler ------------------------------------------------------------------------------------

if TYPE_CHECKING:  # annotations only: a runtime `|` of types needs 3.10 (remote collectors: 3.8)
    _Target = str | int | None  # a label, a relative offset, or None for "next instruction"


class _Asm:
    """Labels instead of hand-counted offsets: the part of classic BPF that goes wrong silently."""

    def __init__(self) -> None:
        self._code: list[tuple[int, _Target, _Target, int]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        if name in self._labels:
            raise ValueError(f"label {name!r} defined twice")
        self._labels[name] = len(self._code)

    def op(self, code: int, k: int = 0) -> None:
        self._code.append((code, None, None, k))

    def jump(self, code: int, k: int, jt: _Target, jf: _Target) -> None:
        self._code.append((code, jt, jf, k))

    def ja(self, target: str) -> None:
        self._code.append((BPF_JMP | BPF_JA, target, None, 0))

    def assemble(self) -> tuple[Insn, ...]:
        out: list[Insn] = []
        for index, (code, jt, jf, k) in enumerate(self._code):
            if code == BPF_JMP | BPF_JA and isinstance(jt, str):
                out.append(Insn(code, 0, 0, self._offset(index, jt, wide=True)))
                continue
            out.append(Insn(code, self._offset(index, jt), self._offset(index, jf), k))
        if len(out) > 4096:  # BPF_MAXINSNS
            raise ValueError(f"program too long ({len(out)} instructions)")
        return tuple(out)

    def _offset(self, index: int, target: _Target, wide: bool = False) -> int:
        if target is None:
            return 0
        if isinstance(target, int):
            return target
        if target not in self._labels:
            raise ValueError(f"undefined label {target!r}")
        offset = self._labels[target] - index - 1
        if offset < 0:
            raise ValueError(f"backward jump to {target!r} (classic BPF jumps forward only)")
        if not wide and offset > 255:
            raise ValueError(f"jump to {target!r} too far ({offset} > 255)")
        return offset


def _ancillary(what: int) -> int:
    return (SKF_AD_OFF + what) & 0xFFFFFFFF


def drop_all_program() -> Program:
    """``ret #0``: attached first, so nothing unfiltered queues up before the real program."""
    return Program((Insn(BPF_RET | BPF_K, 0, 0, 0),), (), True)


def tcp_events_program(
    ports: Sequence[int],
    *,
    payload_snap: int,
    handshake_acks: bool = True,
    payloads: bool = True,
    lo_ifindex: int = 1,
) -> Program:
    """The packet probe's filter: TCP to/from ``ports``, only what the connection picture needs.

    Passes, for IPv4 (unfragmented, or the first fragment) and IPv6 (TCP as the first next-header):

    * every segment with SYN, FIN or RST set;
    * every segment carrying payload (the kernel cannot know which is the *first* of its
      connection, so user space decides; a keep-alive server's later requests reach user space and
      are counted, not emitted);
    * with ``handshake_acks``, pure ACKs travelling *to* a listening port: the handshake's third
      packet is one of them and a stateless filter cannot tell it from a later one. They cost at
      most one packet per client acknowledgement; ``bench/bench_packets.py`` measures the share.

    ``payloads=False`` (with ``handshake_acks=False``) keeps SYN, FIN and RST only: what the
    probe passes while the collector sheds load, because a saturated keep-alive server's
    packets are nearly all payload.

    Drops in the kernel: everything else, and the outgoing copy of every packet on the loopback
    device ``lo_ifindex`` (its incoming copy is kept, so each loopback packet is seen once).

    Returns a snap length of IP + TCP header + ``payload_snap`` bytes, so only the start of a
    payload is copied to user space (enough to recognise a TLS ClientHello or an HTTP first line).
    """
    wanted = sorted({int(p) for p in ports if 0 < int(p) < 65536})
    if not wanted:
        return Program(drop_all_program().insns, (), True)
    exact = len(wanted) <= MAX_FILTER_PORTS
    a = _Asm()
    # Loopback: keep only the incoming copy.
    a.op(BPF_LD | BPF_W | BPF_ABS, _ancillary(SKF_AD_IFINDEX))
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, lo_ifindex, None, "proto")
    a.op(BPF_LD | BPF_W | BPF_ABS, _ancillary(SKF_AD_PKTTYPE))
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, "drop", None)
    a.label("proto")
    a.op(BPF_LD | BPF_W | BPF_ABS, _ancillary(SKF_AD_PROTOCOL))
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, None, "v6")
    # IPv4: TCP, fragment offset 0; X = header length, M[total] = total length.
    a.op(BPF_LD | BPF_B | BPF_ABS, 9)
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, socket.IPPROTO_TCP, None, "drop")
    a.op(BPF_LD | BPF_H | BPF_ABS, 6)
    a.jump(BPF_JMP | BPF_JSET | BPF_K, 0x1FFF, "drop", None)
    a.op(BPF_LDX | BPF_B | BPF_MSH, 0)
    a.op(BPF_LD | BPF_H | BPF_ABS, 2)
    a.op(BPF_ST, _M_TOTAL)
    a.ja("ports")
    a.label("v6")
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, None, "drop")
    a.op(BPF_LD | BPF_B | BPF_ABS, 6)
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, socket.IPPROTO_TCP, None, "drop")
    a.op(BPF_LDX | BPF_IMM, 40)
    a.op(BPF_LD | BPF_H | BPF_ABS, 4)
    a.op(BPF_ALU | BPF_ADD | BPF_K, 40)
    a.op(BPF_ST, _M_TOTAL)
    # Ports: destination first (client -> server), then source (server -> client).
    a.label("ports")
    a.op(BPF_STX, _M_IPHL)
    for field, hit, miss in ((2, "to_server", "sport"), (0, "from_server", "drop")):
        a.op(BPF_LD | BPF_H | BPF_IND, field)
        if exact:
            for i, port in enumerate(wanted):
                last = i == len(wanted) - 1
                a.jump(BPF_JMP | BPF_JEQ | BPF_K, port, hit, miss if last else None)
        else:
            a.jump(BPF_JMP | BPF_JGE | BPF_K, wanted[0], None, miss)
            a.jump(BPF_JMP | BPF_JGT | BPF_K, wanted[-1], miss, hit)
        if field == 2:
            a.label("sport")
    a.label("to_server")
    a.op(BPF_LD | BPF_IMM, 1)
    a.op(BPF_ST, _M_TOSRV)
    a.ja("tcp")
    a.label("from_server")
    a.op(BPF_LD | BPF_IMM, 0)
    a.op(BPF_ST, _M_TOSRV)
    # Header lengths and payload length. A garbage total length makes the subtraction wrap to a
    # huge "payload": the packet is passed and user space's parser rejects it.
    a.label("tcp")
    a.op(BPF_LD | BPF_B | BPF_IND, 12)
    a.op(BPF_ALU | BPF_AND | BPF_K, 0xF0)
    a.op(BPF_ALU | BPF_RSH | BPF_K, 2)
    a.op(BPF_ALU | BPF_ADD | BPF_X, 0)
    a.op(BPF_ST, _M_HDRS)
    a.op(BPF_MISC | BPF_TAX, 0)
    a.op(BPF_LD | BPF_MEM, _M_TOTAL)
    a.op(BPF_ALU | BPF_SUB | BPF_X, 0)
    a.op(BPF_ST, _M_PAYLOAD)
    a.op(BPF_LDX | BPF_MEM, _M_IPHL)
    a.op(BPF_LD | BPF_B | BPF_IND, 13)
    a.jump(BPF_JMP | BPF_JSET | BPF_K, TH_FIN | TH_SYN | TH_RST, "accept", None)
    if payloads:
        a.op(BPF_LD | BPF_MEM, _M_PAYLOAD)
        a.jump(BPF_JMP | BPF_JGT | BPF_K, 0, "accept", None)
    if handshake_acks:
        a.op(BPF_LD | BPF_MEM, _M_TOSRV)
        a.jump(BPF_JMP | BPF_JEQ | BPF_K, 1, None, "drop")
        a.op(BPF_LD | BPF_B | BPF_IND, 13)
        a.jump(BPF_JMP | BPF_JSET | BPF_K, TH_ACK, "accept", "drop")
    else:
        a.ja("drop")
    a.label("accept")
    a.op(BPF_LD | BPF_MEM, _M_HDRS)
    a.op(BPF_ALU | BPF_ADD | BPF_K, max(0, payload_snap))
    a.op(BPF_RET | BPF_A, 0)
    a.label("drop")
    a.op(BPF_RET | BPF_K, 0)
    return Program(a.assemble(), tuple(wanted), exact)


# --- attaching ------------------------------------------------------------------------------------


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def attach(sock: socket.socket, program: Program) -> None:
    """``SO_ATTACH_FILTER``: atomically replace the socket's filter (the kernel copies it)."""
    code = program.pack()
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(program.insns), ctypes.cast(buf, ctypes.c_void_p))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


# --- an interpreter, for tests --------------------------------------------------------------------


def run(
    program: Program | Sequence[Insn],
    packet: bytes,
    *,
    protocol: int,
    ifindex: int = 2,
    pkttype: int = 0,
) -> int:
    """Execute a classic BPF program on ``packet`` as the kernel would; return the snap length.

    Covers the instructions :func:`tcp_events_program` uses. Loads past the end of the packet end
    the program with 0, as in the kernel. ``protocol`` is the EtherType (``skb->protocol``).
    """
    insns = program.insns if isinstance(program, Program) else tuple(program)
    a = x = 0
    mem = [0] * 16
    pc = 0
    anc = {
        _ancillary(SKF_AD_PROTOCOL): protocol,
        _ancillary(SKF_AD_PKTTYPE): pkttype,
        _ancillary(SKF_AD_IFINDEX): ifindex,
    }
    sizes = {BPF_W: 4, BPF_H: 2, BPF_B: 1}

    def load(offset: int, size: int) -> int | None:
        if offset < 0 or offset + size > len(packet):
            return None
        return int.from_bytes(packet[offset : offset + size], "big")

    while pc < len(insns):
        ins = insns[pc]
        code, k = ins.code, ins.k
        cls = code & 0x07
        pc += 1
        if cls == BPF_LD:
            mode, size = code & 0xE0, code & 0x18
            if mode == BPF_IMM:
                a = k
            elif mode == BPF_MEM:
                a = mem[k]
            elif mode == BPF_ABS and k in anc:
                a = anc[k]
            else:
                value = load(k + (x if mode == BPF_IND else 0), sizes[size])
                if value is None:
                    return 0
                a = value
        elif cls == BPF_LDX:
            mode = code & 0xE0
            if mode == BPF_IMM:
                x = k
            elif mode == BPF_MEM:
                x = mem[k]
            elif mode == BPF_MSH:
                value = load(k, 1)
                if value is None:
                    return 0
                x = (value & 0x0F) * 4
            else:
                raise ValueError(f"unsupported ldx {code:#x}")
        elif cls == BPF_ST:
            mem[k] = a
        elif cls == BPF_STX:
            mem[k] = x
        elif cls == BPF_ALU:
            operand = x if code & BPF_X else k
            op = code & 0xF0
            if op == BPF_ADD:
                a = (a + operand) & 0xFFFFFFFF
            elif op == BPF_SUB:
                a = (a - operand) & 0xFFFFFFFF
            elif op == BPF_AND:
                a &= operand
            elif op == BPF_RSH:
                a >>= operand
            elif op == BPF_LSH:
                a = (a << operand) & 0xFFFFFFFF
            else:
                raise ValueError(f"unsupported alu {code:#x}")
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                pc += k
                continue
            operand = x if code & BPF_X else k
            taken = {
                BPF_JEQ: a == operand,
                BPF_JGT: a > operand,
                BPF_JGE: a >= operand,
                BPF_JSET: bool(a & operand),
            }[op]
            pc += ins.jt if taken else ins.jf
        elif cls == BPF_RET:
            return a if code & BPF_A else k
        elif cls == BPF_MISC:
            if code & 0xF8 == BPF_TAX:
                x = a
            else:
                a = x
    raise ValueError("program fell off its end")
