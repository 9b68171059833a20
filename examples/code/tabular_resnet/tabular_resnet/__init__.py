"""A small residual MLP for tables (``model.entrypoint: tabular_resnet.model:build``) and a
data transform (``data.transform: tabular_resnet.transforms:add_ratios``)."""
