# A CPU-sized PETRv2: same architecture (FPE, two frames, Hungarian, focal+L1),
# thin ResNet-18, 64-d transformer, 2 decoder layers, 64 queries, 16 depth bins.
point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
position_range = [-61.2, -61.2, -10.0, 61.2, 61.2, 10.0]
embed_dims = 64
model = dict(
    type='PETRv2',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        mean=[103.530, 116.280, 123.675],
        std=[57.375, 57.120, 58.395],
        bgr_to_rgb=False,
        pad_size_divisor=32),
    use_grid_mask=False,
    img_backbone=dict(
        type='mmdet.ResNet', depth=18, base_channels=16, num_stages=4, out_indices=(2, 3),
        frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
        style='pytorch'),
    # the head reads level 0 only: no output conv for level 1 (DDP needs every parameter used)
    img_neck=dict(type='UsedLevelsFPN', in_channels=[64, 128], out_channels=embed_dims,
                  out_levels=(0,)),
    pts_bbox_head=dict(
        type='PETRv2Head',
        num_classes=10,
        in_channels=embed_dims,
        embed_dims=embed_dims,
        num_query=64,
        position_range=position_range,
        pc_range=point_cloud_range,
        depth_num=16,
        depth_start=1.0,
        lid=True,
        with_fpe=True,
        decoder=dict(
            num_layers=2,
            return_intermediate=True,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=embed_dims, num_heads=4),
                cross_attn_cfg=dict(embed_dims=embed_dims, num_heads=4),
                ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=128, ffn_drop=0.0))),
        bbox_coder=dict(
            type='NMSFreeBBoxCoder',
            post_center_range=position_range,
            pc_range=point_cloud_range,
            max_num=100,
            num_classes=10),
        loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=2.0),
        loss_bbox=dict(type='mmdet.L1Loss', loss_weight=0.25)),
    train_cfg=dict(
        assigner=dict(
            type='mmdet.HungarianAssigner',
            match_costs=[
                dict(type='mmdet.FocalLossCost', weight=2.0),
                dict(type='BBox3DL1Cost', weight=0.25),
            ])))
