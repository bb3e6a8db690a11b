from tli_lightning.cli import main

main()
