"""RepFusion ("Diffusion Model as Representation Learner", ICCV 2023): a frozen diffusion
U-Net teacher read at a timestep chosen per image, distilled into a timm student (stage 1),
which the task modules of `tasks/` then fine-tune (stage 2). Also the DDPM trainer that
makes a teacher where none exists.

    teacher.py   load a diffusers UNet2DModel and read one layer, forward truncated there
    policy.py    which timestep each image gets: rl (REINFORCE), uniform, fixed, curriculum
    module.py    the stage-1 LightningModule (student, EMA, teacher, policy, probe)
    ddpm.py      the DDPM trainer (UNet2DModel + DDPMScheduler) and its sampler

Its feature losses (hint, AT, RKD, dense) are the shared tasks/distill/losses.py.
"""
