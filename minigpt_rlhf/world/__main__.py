from minigpt_rlhf.world.build import main

main()
