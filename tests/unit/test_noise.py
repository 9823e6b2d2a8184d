import torch

from ldae.ops.noise import keyed_normal, keyed_uniform_int, sample_keys


def test_noise_of_a_sample_does_not_depend_on_its_batch():
    """The randomness rule: (seed, epoch, index) fixes t and ε, whatever rank or batch holds the sample."""
    idx = torch.arange(64)
    full = keyed_normal(sample_keys(3, 2, idx), (4, 5, 5))
    ranks = [keyed_normal(sample_keys(3, 2, idx[r::2]), (4, 5, 5)) for r in range(2)]  # two "ranks"
    assert torch.equal(full[0::2], ranks[0]) and torch.equal(full[1::2], ranks[1])
    t_full = keyed_uniform_int(sample_keys(3, 2, idx), 1, 1001)
    assert torch.equal(t_full[10:20], keyed_uniform_int(sample_keys(3, 2, idx[10:20]), 1, 1001))


def test_noise_changes_with_epoch_seed_and_index():
    idx = torch.arange(8)
    a = keyed_normal(sample_keys(0, 0, idx), (16,))
    assert not torch.equal(a, keyed_normal(sample_keys(0, 1, idx), (16,)))
    assert not torch.equal(a, keyed_normal(sample_keys(1, 0, idx), (16,)))
    assert not torch.equal(a[0], a[1])


def test_noise_statistics():
    z = keyed_normal(sample_keys(0, 0, torch.arange(2048)), (3, 8, 8))
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    # No correlation between neighbouring elements or samples.
    flat = z.flatten(1)
    assert abs(float(torch.corrcoef(flat[:, :2].T)[0, 1])) < 0.06
    t = keyed_uniform_int(sample_keys(0, 0, torch.arange(20000)), 1, 1001)
    assert int(t.min()) == 1 and int(t.max()) == 1000
    assert abs(float(t.float().mean()) - 500.5) < 8
