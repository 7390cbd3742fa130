# PETRv2 with a VoVNetV2-99 backbone: the published 800x320 recipe's model.
point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
position_range = [-61.2, -61.2, -10.0, 61.2, 61.2, 10.0]
embed_dims = 256
model = dict(
    type='PETRv2',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        mean=[103.530, 116.280, 123.675],  # BGR, caffe-style like the VoVNet weights
        std=[57.375, 57.120, 58.395],
        bgr_to_rgb=False,
        pad_size_divisor=32),
    use_grid_mask=True,
    grid_mask=dict(ratio=0.5, rotate=1.0, prob=0.7),
    img_backbone=dict(
        type='VoVNet', spec_name='V-99-eSE', norm_eval=True, frozen_stages=-1,
        with_cp=True, out_features=('stage4', 'stage5')),
    # the published CPFPN: the head reads level 0 only, so level 1 gets no output conv
    img_neck=dict(type='UsedLevelsFPN', in_channels=[768, 1024], out_channels=embed_dims,
                  out_levels=(0,)),
    pts_bbox_head=dict(
        type='PETRv2Head',
        num_classes=10,
        in_channels=embed_dims,
        embed_dims=embed_dims,
        num_query=900,
        position_range=position_range,
        pc_range=point_cloud_range,
        depth_num=64,
        depth_start=1.0,
        lid=True,
        with_fpe=True,
        with_multiview=True,  # + (view, row, column) sine encoding, as published
        group_reg_dims=(2, 1, 3, 2, 2),  # per-task regression heads (with_multi)
        mask_outside_keys=False,  # the published model masks padding only
        frustum_pixel='corner',  # the published frustum grid (see docs/petrv2.md)
        with_time=True,  # velocity = displacement / frame gap, as published
        code_weights=[1.0] * 10,  # the published PETRv2 config weighs velocity fully
        decoder=dict(
            num_layers=6,
            return_intermediate=True,
            with_cp=True,  # checkpoint every decoder layer while training, as published
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=embed_dims, num_heads=8, attn_drop=0.1,
                                   proj_drop=0.1),
                cross_attn_cfg=dict(embed_dims=embed_dims, num_heads=8, attn_drop=0.1,
                                    proj_drop=0.1),
                ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=2048, ffn_drop=0.1))),
        bbox_coder=dict(
            type='NMSFreeBBoxCoder',
            post_center_range=position_range,
            pc_range=point_cloud_range,
            max_num=300,
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
