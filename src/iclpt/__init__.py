"""iclpt: ICL vs prompt tuning vs instruction prompt tuning, reproduced."""
__version__ = "0.1.0"
