from digitcmp.models import MODELS
from digitcmp.models.layers import forward_flops, layer_table


def test_layer_table_lists_layers_shapes_and_parameters():
    table = layer_table(MODELS["cnn"]())
    assert "Conv2d" in table and "[1, 16, 16, 16]" in table and "816" in table
    assert "Total params: 77,530" in table
    assert "Estimated Total Size" not in table


def test_forward_flops_counts_linear_and_conv_multiply_adds():
    # baseline: 392x160 + 80x128 + 64x2 multiply-adds, 2 FLOPs each.
    assert forward_flops(MODELS["baseline"]()) == 2 * (392 * 160 + 80 * 128 + 64 * 2)
    assert forward_flops(MODELS["siamese_aux"]()) > forward_flops(MODELS["baseline"]())
