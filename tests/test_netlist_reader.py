"""The lark netlist reader: round trips through the generator, hand-edited SPICE, errors."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from eqprop.network import Network
from eqprop.topology import complete_directed, mlff, small_world
from netlist_gen import build_circuit
from netlist_gen.reader import read_netlist
from netlist_gen.spice_errors import NetlistError, NetlistSyntaxError, NetworkReadError, UnsupportedNetlistError
from netlist_gen.spice_expr import spice_number
from netlist_gen.spice_parse import parse_netlist

DATA = Path(__file__).parent / "data"
EPS = np.finfo(np.float64).eps


def make_net(topology, seed=0) -> Network:
    net = Network.init(topology, seed=seed, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    net.b[topology.n_in:] = torch.tensor(rng.uniform(-0.3, 0.5, topology.n - topology.n_in))
    return net


def devices(net: Network, g_unit=1e-5, g_min=1e-6):
    """A conductance pair per direction realising W exactly in real arithmetic."""
    W = net.W.numpy()
    return g_min + np.maximum(W, 0) * g_unit, g_min + np.maximum(-W, 0) * g_unit, g_unit


def close_ulp(a, b, ulps=2):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.all(np.abs(a - b) <= ulps * EPS * np.maximum(np.abs(a), np.abs(b)))


def error_of(cls, text, **kw) -> NetlistError:
    with pytest.raises(cls) as info:
        read_netlist(text, name="net.cir", **kw)
    return info.value


TOPOLOGIES = {"mlff": lambda: mlff((3, 5, 4, 2)),
              "small_world": lambda: small_world((3, 5, 4, 2), 0.3, seed=2, intralayer=True)}


# -- round trips through the generator -------------------------------------------------
@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
@pytest.mark.parametrize("g0", [1.0, 1e-6])
def test_ideal_unfolded_round_trip_is_exact(kind, g0):
    net = make_net(TOPOLOGIES[kind]())
    x, s0 = [0.3, 0.7, 1.4], np.linspace(-0.2, 1.2, net.topology.n)
    text = build_circuit(net, x, fold_inputs=False, beta=0.5, target=[1.0, 0.2], g0=g0, c=1e-12, clamp=1e3,
                         state0=s0, use="ic").to_spice()
    r = read_netlist(text)
    assert np.array_equal(r.network.topology.mask, net.topology.mask)
    assert not r.network.topology.directed and r.network.topology.sizes == net.topology.sizes
    W, b = r.network.W.numpy(), r.network.b.numpy()
    if g0 == 1.0:  # every written float comes back bit for bit
        assert torch.equal(r.network.W, net.W) and torch.equal(r.network.b, net.b)
    else:  # gain/g0 with gain = g0*W: within an ulp
        assert close_ulp(W, net.W.numpy()) and close_ulp(b, net.b.numpy())
    assert (r.level, r.inputs, r.g0, r.c, r.clamp, r.g_unit) == ("ideal", "unfolded", g0, 1e-12, 1e3, None)
    assert r.x.tolist() == [0.3, 0.7, 1.0]  # the sources hold rho(x)
    assert r.beta == 0.5 and r.target.tolist() == [1.0, 0.2]
    assert r.initial_use == "ic" and np.array_equal(r.initial_u[3:], s0[3:]) and np.isnan(r.initial_u[:3]).all()
    assert r.notes == [] and r.input_drive is None


def test_float32_network_reads_back_equal():
    net = Network.init(mlff((2, 3, 2)), seed=4)  # float32 weights, written as float64 reprs
    r = read_netlist(build_circuit(net, fold_inputs=False).to_spice())
    assert torch.equal(r.network.W.float(), net.W) and r.beta == 0.0 and r.target is None


def test_directed_round_trip():
    topo = complete_directed(2, 3, 2)
    net = make_net(topo)
    r = read_netlist(build_circuit(net, [0.2, 0.9], fold_inputs=False).to_spice())
    assert r.network.topology.directed and r.header["directed"] == "1"
    assert np.array_equal(r.network.topology.mask, topo.mask) and torch.equal(r.network.W, net.W)


@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
def test_folded_round_trip_marks_what_is_missing(kind):
    net = make_net(TOPOLOGIES[kind]())
    n_in = net.topology.n_in
    x = np.array([0.3, 0.7, 1.4])
    r = read_netlist(build_circuit(net, x).to_spice())
    mask = net.topology.mask.copy()
    mask[:n_in], mask[:, :n_in] = False, False  # input synapses are folded away
    W = net.W.numpy().copy()
    W[:n_in], W[:, :n_in] = 0.0, 0.0
    assert r.folded and r.x is None and "folded" in r.notes[0]
    assert np.array_equal(r.network.topology.mask, mask) and np.array_equal(r.network.W.numpy(), W)
    assert torch.equal(r.network.b, net.b)
    drive = np.clip(x, 0, 1) @ net.W.numpy()[:n_in]  # what the Ix sources stand for
    assert np.allclose(r.input_drive, drive, rtol=0, atol=1e-15)


@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
@pytest.mark.parametrize("fold", [False, True])
def test_crossbar_reads_effective_weights(kind, fold):
    net = make_net(TOPOLOGIES[kind]())
    Gp, Gm, g_unit = devices(net)
    r = read_netlist(build_circuit(net, [0.3, 0.7, 1.0], fold_inputs=not fold, level="crossbar",
                                   device_arrays=(Gp, Gm, g_unit)).to_spice())
    assert r.level == "crossbar" and r.g_unit == g_unit and not r.network.topology.directed
    m = r.network.topology.mask
    expected = (Gp - Gm) / g_unit * m
    # resistances are written as 1/G: the weights come back to ~1 ulp of G/g_unit
    assert np.abs(r.network.W.numpy() - expected).max() <= 4 * EPS * Gp.max() / g_unit
    assert np.array_equal(m[3:, 3:], net.topology.mask[3:, 3:])
    written = r.conductances[0] > 0
    assert close_ulp(r.conductances[0][written], Gp[written], 4)


def test_crossbar_asymmetric_pairs():
    net = make_net(mlff((3, 5, 2)))
    Gp, Gm, g_unit = devices(net)
    Gp[3, 8] *= 1.01  # one direction of one weight drifts, as a mismatched device pair does
    text = build_circuit(net, fold_inputs=False, level="crossbar", device_arrays=(Gp, Gm, g_unit)).to_spice()
    r = read_netlist(text)  # default: a directed network with the circuit's own weights
    assert r.network.topology.directed and "directed" in r.notes[0]
    assert np.array_equal(r.network.W.numpy()[3:], r.W_circuit[3:])
    avg = read_netlist(text, asymmetric="average")
    assert not avg.network.topology.directed
    assert avg.network.W[3, 8] == (r.W_circuit[3, 8] + r.W_circuit[8, 3]) / 2
    e = error_of(NetworkReadError, text, asymmetric="error")
    line = text.splitlines().index(next(s for s in text.splitlines() if s.startswith("Rp8_3 "))) + 1
    assert (e.line, e.column) == (line, 1) and "'Rp8_3'" in str(e) and "'Rp3_8'" in str(e)


def test_generator_fixture_reads_back():
    r = read_netlist(DATA / "net_2_2_1.cir")
    W = np.zeros((5, 5))
    W[0, 2], W[0, 3], W[1, 2], W[1, 3], W[2, 4], W[3, 4] = 0.5, -0.25, 0.75, 1.0, 0.625, -0.375
    assert np.array_equal(r.network.W.numpy(), W + W.T)
    assert r.network.b.tolist() == [0.0, 0.0, 0.125, -0.25, 0.0625] and r.x.tolist() == [0.25, 0.75]


def test_without_header_sizes_are_needed():
    net = make_net(mlff((2, 3, 1)))
    text = build_circuit(net, [0.5, 0.5], fold_inputs=False, g0=1e-3, clamp=10.0).to_spice()
    headless = "my own title\n" + text.split("\n", 1)[1]
    e = error_of(NetworkReadError, headless)
    assert (e.line, e.column) == (1, 1) and "sizes=" in e.message
    r = read_netlist(headless, sizes=(2, 3, 1))
    assert r.header == {} and (r.level, r.inputs, r.clamp) == ("ideal", "unfolded", 10.0)
    assert abs(r.g0 - 1e-3) <= EPS * 1e-3 and close_ulp(r.network.W.numpy(), net.W.numpy())
    with pytest.raises(NetworkReadError, match="header says"):
        read_netlist(text, sizes=(2, 2, 2))


# -- hand-edited SPICE ----------------------------------------------------------------------
def test_hand_edited_fixture():
    r = read_netlist(DATA / "reader_hand_edited.cir")
    W = np.zeros((5, 5))
    W[0, 2], W[0, 3], W[1, 2], W[1, 3], W[2, 4], W[3, 4] = 0.5, -0.25, 0.75, 1.0, 0.625, -0.375
    assert close_ulp(r.network.W.numpy(), W + W.T)
    assert close_ulp(r.network.b.numpy(), [0.0, 0.0, 0.125, -0.25, 0.0625])
    assert r.x.tolist() == [0.25, 0.75] and r.g0 == 1e-3 and r.c == 1e-12
    assert r.initial_use == "nodeset" and r.initial_u[2:].tolist() == [0.5, 0.5, 0.25]
    net = r.netlist
    assert net.includes == [str(DATA / "reader_neuron3.inc")]
    assert net.element("GW3_4").pos.file.endswith("reader_neuron3.inc") and net.element("Gw3_4").pos.line == 8
    assert net.element("gw2_1").pos.line == 20 and net.element("gw2_1").nodes == ("0", "u2", "r1", "0")
    assert [a.name for a in net.analyses] == ["tran"] and net.skipped[0].name == "control"
    assert net.options == {"reltol": 1e-9, "method": "gear"} and net.params["w24"] == 0.625


@pytest.mark.parametrize("text,value", [
    ("10kOhm", 1e4), ("1e-6", 1e-6), ("2.2u", 2.2e-6), ("1MEG", 1e6), ("1meg", 1e6), ("4m", 4e-3),
    ("4M", 4e-3), ("3mil", 3 * 25.4e-6), ("5f", 5e-15), ("1.5T", 1.5e12), ("1g", 1e9), ("100pF", 1e-10),
    ("47n", 4.7e-8), (".5", 0.5), ("-0.7071067811865476", -0.7071067811865476), ("1e3k", 1e6), ("+2V", 2.0)])
def test_engineering_suffixes(text, value):
    assert spice_number(text) == value


def test_spice_features():
    net = parse_netlist("""title: anything, even R1 a b 1
.param a=2k b={a*2} c='max(a, b)/4' d=a
R1 n1 n2 {b}   ; inline comment
r2 n2 0 {2*(a+1k)^2/1meg} tc1=1e-3
+ tc2=0
C1 n1 0 1u ic=0.5
E1 e 0 n1 0 2
G1 0 n2 value={v(n1)*2}
F1 0 n2 VSENSE 0.5
VSENSE n2 s 0
B1 b 0 i=v(n1)*{a}
V1 n1 0 dc 1 ac 1 0 pulse(0 1 1n 1n 1n 5u 10u)
I1 0 n2
D1 n2 0 dmod 2
X1 n1 n2 half r={c}
.subckt half p q params: r=1k
R1 p q {r}
.ends half
.model dmod d(is=1e-14 n=1.05)
.ic v(n1)=1
.dc V1 0 1 0.1
.op
.end
""")
    e = {x.name.lower(): x for x in net.elements}
    assert net.params == {"a": 2000.0, "b": 4000.0, "c": 1000.0, "d": 2000.0}
    assert e["r1"].value == 4000.0 and e["r2"].value == 18.0 and e["r2"].params == {"tc1": 1e-3, "tc2": 0.0}
    assert e["c1"].params == {"ic": 0.5} and e["e1"].nodes == ("e", "0", "n1", "0") and e["e1"].value == 2.0
    assert (e["g1"].expr, e["g1"].expr_kind) == ("v(n1)*2", "value")
    assert e["f1"].ref == "VSENSE" and e["b1"].expr == "v(n1)*{a}" and e["b1"].expr_kind == "i"
    assert e["v1"].value == 1.0 and e["v1"].ac == (1.0, 0.0) and e["v1"].waveform[0] == "pulse"
    assert e["i1"].value == 0.0 and e["d1"].ref == "dmod" and e["d1"].value == 2.0
    assert e["x1"].nodes == ("n1", "n2") and e["x1"].ref == "half" and e["x1"].params == {"r": 1000.0}
    assert net.subckts["half"].ports == ("p", "q") and net.subckts["half"].elements[0].value == 1000.0
    assert net.models["dmod"].params == {"is": 1e-14, "n": 1.05}
    assert [(a.name, a.args) for a in net.analyses] == [("dc", ("v1", 0.0, 1.0, 0.1)), ("op", ())]
    assert net.ic[0].node == "n1" and net.title.startswith("title:")


# -- errors: line, column, message --------------------------------------------------------
HEAD = "* eqprop-spice format=1 sizes=2,2,1 level=ideal inputs=unfolded directed=0 g0=1.0 c=1.0 clamp=0.0\n"


@pytest.mark.parametrize("line,col,cls,fragment", [
    ("R1 a 10k", 9, NetlistSyntaxError, "expected a number"),  # a node missing: the value comes short
    ("Gw2_0 0 u2 r0 0.5", 18, NetlistSyntaxError, "nc+ nc- gain"),
    ("R1 a b 1.2.3k", 8, NetlistSyntaxError, "bad number '1.2.3k'"),
    ("R1 a b {2*(3}", 13, NetlistSyntaxError, "bad expression"),
    ("R1 a b {2*q}", 11, NetlistSyntaxError, "unknown parameter 'q'"),
    ("R1 a b {1k", 8, NetlistSyntaxError, "unclosed {"),
    ("R1 a b 1k x", 11, NetlistSyntaxError, "unknown model 'x' of R1 (no .model x"),
    ("  .foo bar", 3, NetlistSyntaxError, "unknown dot-command '.foo'"),
    (".nodeset v(u2=1", 14, NetlistSyntaxError, "expected ')'"),
    ("M1 d g s 0 nmos", 1, UnsupportedNetlistError, "M elements (MOSFET)"),
    ("Q1 c b e npn", 1, UnsupportedNetlistError, "BJT"),
    (".lib models.lib tt", 1, UnsupportedNetlistError, "'.lib'"),
    (".control\nrun", 1, NetlistSyntaxError, ".control block without .endc"),
    (".subckt s a b\nR1 a b 1", 1, NetlistSyntaxError, "unterminated .subckt 's'"),
    (".ends", 1, NetlistSyntaxError, ".ends without a .subckt"),
    (".include no_such_file.cir", 1, NetlistSyntaxError, "cannot read include file"),
])
def test_syntax_errors_name_line_and_column(line, col, cls, fragment):
    e = error_of(cls, HEAD + "Cn2 u2 0 1.0\n" + line + "\n.end\n")
    assert (e.file, e.line, e.column) == ("net.cir", 3, col)
    assert fragment in e.message
    text = str(e).splitlines()
    assert text[0].startswith(f"net.cir:3:{col}: ")
    assert text[1] == "    " + line.split("\n")[0] and text[2] == "    " + " " * (col - 1) + "^"


def test_duplicate_element_names_are_case_insensitive():
    e = error_of(NetlistSyntaxError, HEAD + "Cn2 u2 0 1.0\n* comment\ncn2 u2 0 2.0\n")
    assert (e.line, e.column) == (4, 1) and "duplicate element name 'cn2' (first at net.cir:2:1)" in e.message


def test_include_cycle(tmp_path):
    (tmp_path / "a.cir").write_text("title\n.include sub/b.inc\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.inc").write_text("* b\n\n.include ../a.cir\n")
    with pytest.raises(NetlistSyntaxError) as info:
        parse_netlist(tmp_path / "a.cir")
    assert info.value.file == str(tmp_path / "sub" / "b.inc") and (info.value.line, info.value.column) == (3, 1)
    assert ".include cycle: a.cir -> b.inc -> a.cir" in info.value.message


def test_include_resolves_relative_to_the_including_file(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "vals.inc").write_text(".param k=3\n.include more.inc\n")
    (tmp_path / "lib" / "more.inc").write_text("R9 a 0 {k}k\n")
    (tmp_path / "top.cir").write_text("t\n.include 'lib/vals.inc'\n")
    with pytest.raises(NetlistSyntaxError) as info:  # "{k}k" is no value: the error is in more.inc
        parse_netlist(tmp_path / "top.cir")
    assert info.value.file.endswith("more.inc") and (info.value.line, info.value.column) == (1, 11)
    (tmp_path / "lib" / "more.inc").write_text("R9 a 0 {k*1k}\n")
    assert parse_netlist(tmp_path / "top.cir").element("r9").value == 3000.0


NET_2_2_1 = (DATA / "net_2_2_1.cir").read_text()


@pytest.mark.parametrize("old,new,where,fragment", [
    ("Gw2_4 0 u2 r4 0", "Gfoo 0 u2 r4 0", "Gfoo", "a G element here is a synapse"),
    ("Gw2_4 0 u2 r4 0", "Gw2_4 0 u2 r3 0", "Gw2_4", "not a synapse pattern: expected nodes 0 u2 r4 0"),
    ("Gw2_4 0 u2 r4 0", "Gw2_9 0 u2 r9 0", "Gw2_9", "refers to neuron 9, but sizes (2, 2, 1) have 5 neurons"),
    ("Gw2_4 0 u2 r4 0", "Gw2_2 0 u2 r2 0", "Gw2_2", "connects neuron 2 to itself"),
    ("Rl3 u3 0 1.0", "Rl3 u3 0 2.0", "Rl3", "is no leak of g0=1.0"),
    ("v=min(max(v(u3),0),1)", "v=tanh(v(u3))", "Br3", "is not the ideal clamp"),
    ("Ib3 0 u3 -0.25", "Ib3 0 u3 pulse(0 1 0 1n 1n 1u 2u)", "Ib3", "waveforms are not part of the format"),
    ("Gw4_3 0 u4 r3 0 -0.375", "Gw4_3 0 u4 r3 0 -0.375\nGw3_2 0 u3 r2 0 0.1", "Gw3_2", "has no reverse synapse"),
    ("Gw2_4 0 u2 r4 0 0.625", "Gw2_4 0 u2 r4 0 0.6251", "Gw4_2", "vs W[4,2] = 0.6251 ('Gw2_4', line 12)"),
    ("In4 0 u4 0.0", "In4 0 u4 0.3", "In4", "must be 0.0 when the nudge gain is 0"),
    ("Vx1 r1 0 0.75", "Vx1 r1 0 0.75\nVx2 r2 0 0.5", "Vx2", "Vx sources hold the inputs 0..1"),
    ("Ib2 0 u2 0.125", "Ib2 0 u2 0.125\nIx2 0 u2 0.5", "Ix2", "an unfolded netlist has no Ix"),
])
def test_network_errors_point_at_the_element(old, new, where, fragment):
    assert old in NET_2_2_1
    e = error_of(NetworkReadError, NET_2_2_1.replace(old, new, 1), asymmetric="error")
    assert e.source_line.startswith(where + " ") and e.column == 1 and fragment in e.message
    assert e.line == NET_2_2_1.replace(old, new, 1).splitlines().index(e.source_line) + 1


def test_header_errors():
    e = error_of(UnsupportedNetlistError, NET_2_2_1.replace("format=1", "format=2"))
    assert (e.line, e.column) == (1, NET_2_2_1.index("format=") + 8)
    assert "header format=2; this reader knows format=1" in e.message
    e = error_of(NetworkReadError, NET_2_2_1.replace("level=ideal", "level=quantum"))
    assert e.line == 1 and e.column == NET_2_2_1.index("ideal") + 1 and "level='quantum'" in e.message
    e = error_of(NetworkReadError, NET_2_2_1.replace("Rl3 u3 0 1.0\n", ""))
    assert e.line == 1 and "neuron 3 has no Rl3 (leak)" in e.message
    # DEEP's neuron (blocks_deep: no leak, a self term) is refused at its header key, not at an element
    deep = NET_2_2_1.replace("clamp=0.0", "clamp=0.0 dynamics=deep")
    e = error_of(UnsupportedNetlistError, deep)
    assert (e.line, e.column) == (1, deep.index("dynamics=") + 10) and "reads the leaky neuron" in e.message


def test_no_lark_exception_leaks():
    """Random damage to a valid netlist gives a NetlistError or a network, nothing else."""
    rng = np.random.default_rng(0)
    junk = list("{}()=,;'\"*+.$ \n") + ["1.2.3", "v(", "k", ".subckt", ".ends", "M1", "\n+", "{a*"]
    for _ in range(150):
        text = list(NET_2_2_1)
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(len(text)))
            if rng.random() < 0.5:
                del text[k]
            else:
                text.insert(k, junk[int(rng.integers(len(junk)))])
        try:
            read_netlist("".join(text), asymmetric="average")
        except NetlistError as e:
            assert e.line is None or e.line >= 1


def test_initial_state_and_line_endings():
    text = NET_2_2_1.replace(".end\n", ".IC V(u2)=0.5 v(U4)=-0.25\n.end\n").replace("\n", "\r\n")
    r = read_netlist(text)
    assert r.initial_use == "ic" and r.initial_u[[2, 4]].tolist() == [0.5, -0.25] and np.isnan(r.initial_u[3])
    e = error_of(NetworkReadError, NET_2_2_1.replace(".end\n", ".nodeset v(u2)=0.5 v(u0)=1\n.end\n"))
    assert e.column == len(".nodeset v(u2)=0.5 v(") + 1 and "v(u0): no such neuron node" in e.message
    with pytest.raises(ValueError, match="asymmetric must be"):
        read_netlist(NET_2_2_1, asymmetric="ignore")


def test_keywords_are_case_insensitive():
    net = parse_netlist("T\n.PARAM A=2\n.Options RELTOL=1e-6\nV1 a 0 DC {a}\n.SUBCKT s x\nr1 x 0 1K\n.ENDS S\n.END\n")
    assert net.element("v1").value == 2.0 and net.options == {"reltol": 1e-6}
    assert net.subckts["s"].elements[0].value == 1000.0



# -- hostile and real-world input (docs/reliability-reader.md) ---------------------------------
def test_non_utf8_bytes_in_comments_are_accepted_elsewhere_located(tmp_path):
    """A Latin-1 byte is harmless where ngspice never looks (title, comments, .control); in a
    name or value it is refused with the byte and its place, never a UnicodeDecodeError."""
    text = NET_2_2_1.replace("* neurons:", "* 10 \xb5F, neurons:").replace("Rl3 u3 0 1.0", "Rl3 u3 0 1.0 ; \xb5")
    r = read_netlist(text.encode("latin-1"), name="net.cir")  # bytes are netlist text
    assert torch.equal(r.network.W, read_netlist(NET_2_2_1).network.W)
    path = tmp_path / "net.cir"
    path.write_bytes(NET_2_2_1.replace("Rl3 u3 0 1.0", "Rl3 u3 0 1.0\xb5").encode("latin-1"))
    with pytest.raises(NetlistSyntaxError) as info:
        read_netlist(path)
    e = info.value
    line = NET_2_2_1.splitlines().index("Rl3 u3 0 1.0") + 1
    assert (e.file, e.line, e.column) == (str(path), line, 13) and "byte 0xB5 is not UTF-8" in e.message
    assert "\ufffd" in str(e)  # the excerpt shows it, and the message prints anywhere
    e = error_of(NetlistSyntaxError, NET_2_2_1.replace("Rl3 u3", "Rl3 u\udcb5"))  # str with a lone surrogate
    assert (e.line, e.column) == (line, 6) and "byte 0xB5" in e.message


@pytest.mark.parametrize("ch,fragment", [
    ("\x00", "control character U+0000"), ("\x0b", "U+000B (vertical tab) is no SPICE blank"),
    ("\xa0", "U+00A0 (no-break space) is no SPICE blank"), ("\u2028", "U+2028 (line separator)")])
def test_control_characters_and_unicode_blanks_are_located(ch, fragment):
    """SPICE separates fields with spaces and tabs: a no-break space pasted from a web page is
    named, not reported as 'unexpected end of line'. In comments such characters are harmless."""
    e = error_of(NetlistSyntaxError, HEAD + f"R1 a{ch}b 1k\n")
    assert (e.line, e.column) == (2, 5) and fragment in e.message and "\ufffd" in str(e)
    assert parse_netlist(f"t\n* {ch}\nR1 a b 1k ; {ch}\n").element("r1").value == 1000.0


def test_byte_order_mark_does_not_hide_the_header():
    r = read_netlist(b"\xef\xbb\xbf" + NET_2_2_1.encode())
    assert r.header["sizes"] == "2,2,1" and torch.equal(r.network.W, read_netlist(NET_2_2_1).network.W)
    assert read_netlist("\ufeff" + NET_2_2_1).header["format"] == "1"


@pytest.mark.parametrize("sizes,fragment", [
    ("4,5,0,3", "each of >= 1 neuron"), ("2", "at least an input and an output layer"), ("-1", ">= 1 neuron"),
    ("2,x,1", "expected layer sizes"), ("", "expected layer sizes"), ("2,2,100000000", "more than this reader's"),
    ("9" * 5000, "expected layer sizes")])
def test_header_sizes_are_checked_at_the_header(sizes, fragment):
    e = error_of(NetworkReadError, NET_2_2_1.replace("sizes=2,2,1", f"sizes={sizes}"))
    assert (e.line, e.column) == (1, NET_2_2_1.index("2,2,1") + 1) and fragment in e.message


def test_values_overflowing_on_division_by_g0_are_refused_at_the_element():
    text = NET_2_2_1.replace("g0=1.0", "g0=1e-300").replace("Rl2 u2 0 1.0", "Rl2 u2 0 1e300")
    text = text.replace("Rl3 u3 0 1.0", "Rl3 u3 0 1e300").replace("Rl4 u4 0 1.0", "Rl4 u4 0 1e300")
    e = error_of(NetworkReadError, text.replace("Gw2_0 0 u2 r0 0 0.5", "Gw2_0 0 u2 r0 0 1e10"))
    assert e.source_line.startswith("Gw2_0 ") and "W[0,2] (gain/g0) = inf: not a finite number" in e.message
    e = error_of(NetworkReadError, NET_2_2_1.replace("g0=1.0", "g0=1e-320"))
    assert e.line == 1 or e.source_line.split()[0] in ("Rl2", "Ib2")  # 1/g0 = inf: the leak cannot match


def test_crossbar_with_subnormal_resistances_gives_a_located_error():
    net = make_net(mlff((2, 3, 2)))
    Gp, Gm, g_unit = devices(net)
    text = build_circuit(net, [0.5, 0.5], fold_inputs=False, level="crossbar",
                         device_arrays=(Gp, Gm, g_unit)).to_spice()
    old = next(s for s in text.splitlines() if s.startswith("Rp3_0 "))
    e = error_of(NetworkReadError, text.replace(old, "Rp3_0 r0 cp3 1e-310"))
    assert e.source_line == "Rp3_0 r0 cp3 1e-310" and "conductance 1/R = inf" in e.message


@pytest.mark.parametrize("line,col,fragment", [
    ("R1 a b {1+}", 11, "bad expression"), ("V1 a 0 pulse(0 1", 17, "expected"), ("R1 (a b 1", 4, "a node or name"),
    (".include", 9, "expected a file name"), ("V1 a b dc", 10, "'=' or a number"), ("X1", 3, "a node or name"),
    (".model m", 9, "a node or name"), ("B1 a b x=1", 8, "v= or i="), ("G1 a b c", 9, "a node or name"),
    ("R1 a b inf", 8, "bad number 'inf'"), ("F1 a b v1 -inf", 11, "bad number '-inf'")])
def test_messages_say_what_spice_text_was_expected(line, col, fragment):
    """Never a grammar-internal name (ac_kw, WAVEFORM, __ANON_0, $END): what to write there."""
    e = error_of(NetlistSyntaxError, HEAD + line + "\n")
    assert (e.line, e.column) == (2, col) and fragment in e.message
    assert not re.search(r"[A-Z]+_[A-Z]+|_kw|__|\$END|squoted|waveform or", e.message), e.message


def test_valid_ngspice_forms_are_read():
    """Forms of real decks (tests/data/reader_decks has each as a deck checked against ngspice 39)."""
    net = parse_netlist("""t
V1 1 0 pulse 0 1 1n 1n 1n 5u 10u
V2 2 0 sin(0 1 1k) ac 1
V3 3 0 dc 1 ac
V4 4 0 ac 2 dc=3
R1 1 0 rmod 1k
R2 1 0 2k rmod
R3 1 0 r=3k
R4 1 0 rval
C1 1 0 c=2p
D1 1 0 dm off
E1 5 0 1 0 gain
.param rval = 2 * 2k gain=3
.model rmod r(rsh=1)
.model dm d
.model irf VDMOS(nchan Rg=3 mfg=IR)
""")
    e = {x.name.lower(): x for x in net.elements}
    assert e["v1"].waveform == ("pulse", (0.0, 1.0, 1e-9, 1e-9, 1e-9, 5e-6, 1e-5)) and e["v1"].value == 0.0
    assert e["v2"].ac == (1.0,) and e["v2"].waveform[0] == "sin" and e["v3"].ac == (1.0,) and e["v3"].value == 1.0
    assert e["v4"].ac == (2.0,) and e["v4"].value == 3.0
    assert (e["r1"].value, e["r1"].ref, e["r2"].value, e["r2"].ref) == (1e3, "rmod", 2e3, "rmod")
    assert (e["r3"].value, e["r3"].params, e["r4"].value, e["r4"].ref) == (3e3, {}, 4e3, None)
    assert e["c1"].value == 2e-12 and e["d1"].flags == ("off",) and e["e1"].value == 3.0
    assert net.models["irf"].params == {"nchan": None, "rg": 3.0, "mfg": "IR"}


@pytest.mark.parametrize("line,col,cls,fragment", [
    ("R1 a b 4K7", 8, UnsupportedNetlistError, "RKM value '4K7'"),
    ("R1 a b {2*4k7}", 11, UnsupportedNetlistError, "RKM value '4k7'"),
    ("E1 a b poly(1) c d 0 1", 8, UnsupportedNetlistError, "POLY controlled sources"),
    ("G1 a b table {v(c)} = (0 0) (1 1)", 8, UnsupportedNetlistError, "TABLE controlled sources"),
    ("R1 a b rmod\n.model rmod r(rsh=1)", 8, UnsupportedNetlistError, "takes its value from model 'rmod'"),
    ("R1 a b 1k r=2k", 13, UnsupportedNetlistError, "gives its value twice"),
    ("V1 a b 1 dc 2", 13, UnsupportedNetlistError, "a second DC value"),
    ("R1 a b rval", 8, NetlistSyntaxError, "no .model rval in the netlist, and no .param"),
])
def test_valid_spice_outside_the_subset_is_refused_by_name(line, col, cls, fragment):
    e = error_of(cls, "t\n" + line + "\n")
    assert (e.line, e.column) == (2, col) and fragment in e.message and "syntax" not in e.message
