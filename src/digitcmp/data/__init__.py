"""MNIST digits for the pair-comparison task: the IDX format (``idx``), where digits come from
(``sources``) and how a round's pairs are drawn from them (``pairs``)."""
